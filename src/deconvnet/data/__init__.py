"""Data: class names and palette, VOC/SBD readers, the synthetic VOC set, downloads,
proposals, windows and the Lightning DataModules.

Import the submodules directly (``from deconvnet.data.voc import VOCSegmentationIndex``);
this package file stays empty so that importing one part does not import them all.
"""
