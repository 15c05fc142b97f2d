"""fewlabel.engines"""
