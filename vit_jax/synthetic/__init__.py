"""Formula-driven synthetic images (FDSL): fractals (FractalDB) and radial contours (RCDB).

No data set is stored: image i is rendered from (data seed, category, instance) when the input
pipeline decodes it. `fractals` and `contours` define the families (their categories and the point
clouds of their instances, numpy vectorised over a batch), `raster` turns point clouds into images, `generate` renders a batch (numpy only),
`source` makes them data sources (config.dataset.source = "fractal" | "contours"; tf.data calls the
renderer through tf.numpy_function, a batch at a time), `export` writes an image folder.
"""
