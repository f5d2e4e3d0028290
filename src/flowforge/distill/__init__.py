"""Few-step generation: reflow (rf++), MeanFlow, flow-map distillation, TwinFlow, FlowTurbo and
blockwise flow matching. Each method is an objective ``objective(model, x_1, cond, generator)
-> (B,)`` plus its few-step sampler."""
