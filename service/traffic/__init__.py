"""Simulated SES traffic: the model, its schedule, the demo simulator and loadgen."""
