"""Reading, caching and writing scans and labels: images, DICOM series, .seg.nrrd, label tables, augmentation."""
