"""PyTorch side: capture a module into a bundle, restore a module from one, fit."""
