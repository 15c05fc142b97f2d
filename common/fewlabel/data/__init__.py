"""fewlabel.data"""
