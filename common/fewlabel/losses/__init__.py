"""fewlabel.losses"""
