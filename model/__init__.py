"""cinstyle's networks and maths: CIN transformer, VGG-19 loss network, losses,
slow optimisation, the style bank format and image I/O. Free of HTTP."""
