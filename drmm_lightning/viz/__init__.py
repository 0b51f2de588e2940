"""Pictures: image grids of renderings, samples, filters and templates; learning-curve plots."""
