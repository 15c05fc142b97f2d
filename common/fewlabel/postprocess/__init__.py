"""fewlabel.postprocess"""
