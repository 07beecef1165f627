"""Entry points: one thin module per pipeline, each with a `build(pipeline, options)`."""
