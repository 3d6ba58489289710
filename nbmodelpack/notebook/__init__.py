"""The notebook door: the ``%modelpack`` magic, the training dashboard and HTML displays."""
