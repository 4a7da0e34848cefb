"""Research code: the benchmark data sets, the Figure-1 toy and the benchmark study."""
