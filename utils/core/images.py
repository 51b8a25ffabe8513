"""Image file suffixes every reader accepts (datasets, converters, detect sources)."""

IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")
