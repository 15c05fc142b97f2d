"""fewlabel.metrics"""
