"""fewlabel.sam"""
