"""Running: the two coordinators (file Pipeline, LiveRunner) over the shared stages, tracks and pose scheduling,
propagation (flow, two-sided, smoothing), backends, typed results and metrics. openvino, numpy, opencv only."""
