"""fewlabel.networks"""
