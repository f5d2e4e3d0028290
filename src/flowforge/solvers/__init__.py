"""ODE solvers, time grids, adaptive integration, NFE counting and flow log-likelihoods."""

from flowforge.solvers.adaptive import integrate_dopri5, sample_dopri5
from flowforge.solvers.counting import CountingField
from flowforge.solvers.edm import sample_edm_heun
from flowforge.solvers.grids import (
    check_time_grid,
    edm_sigmas,
    edm_time_grid,
    shifted_grid,
    uniform_grid,
)
from flowforge.solvers.likelihood import (
    DivergenceMethod,
    LikelihoodMethod,
    ProbeKind,
    exact_divergence,
    hutchinson_divergence,
    log_likelihood,
    sample_with_log_prob,
    standard_normal_log_prob,
)
from flowforge.solvers.ode import (
    EULER,
    HEUN,
    MIDPOINT,
    NFE_PER_STEP,
    RK4,
    TABLEAUS,
    ButcherTableau,
    ODEMethod,
    integrate_rk,
    prepare_state,
    sample_euler,
    sample_heun,
    sample_midpoint,
    sample_ode,
    sample_rk4,
)
from flowforge.solvers.sde import DiffusionCoefficient, SDEMethod, sample_sde
from flowforge.solvers.symmflow import symmflow_classify, symmflow_generate, symmflow_segment

__all__ = [
    "ButcherTableau",
    "CountingField",
    "DiffusionCoefficient",
    "DivergenceMethod",
    "EULER",
    "HEUN",
    "LikelihoodMethod",
    "MIDPOINT",
    "NFE_PER_STEP",
    "ODEMethod",
    "ProbeKind",
    "RK4",
    "SDEMethod",
    "TABLEAUS",
    "check_time_grid",
    "edm_sigmas",
    "edm_time_grid",
    "exact_divergence",
    "hutchinson_divergence",
    "integrate_dopri5",
    "integrate_rk",
    "log_likelihood",
    "prepare_state",
    "sample_dopri5",
    "sample_edm_heun",
    "sample_euler",
    "sample_heun",
    "sample_midpoint",
    "sample_ode",
    "sample_rk4",
    "sample_sde",
    "sample_with_log_prob",
    "shifted_grid",
    "standard_normal_log_prob",
    "symmflow_classify",
    "symmflow_generate",
    "symmflow_segment",
    "uniform_grid",
]
