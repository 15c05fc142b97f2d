"""fewlabel.transforms"""
