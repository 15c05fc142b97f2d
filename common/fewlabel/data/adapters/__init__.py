"""fewlabel.data.adapters"""
