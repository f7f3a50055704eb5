"""Formula-driven synthetic images (FDSL): fractals (FractalDB) and radial contours (RCDB).

No data set is stored: image i is rendered from (data seed, category, instance) when the input
pipeline decodes it. `fractals` and `contours` define the families (categories drawn in numpy,
instances in TensorFlow ops), `raster` turns a point cloud into an image, `source` makes them
data sources (config.dataset.source = "fractal" | "contours"), `export` writes an image folder.
"""
