"""Training: the loop and what it is built from (devices, network, loaders), one SGD step, the
optimiser and lr schedule, sync points, health checks, validation, resume, the run log."""
