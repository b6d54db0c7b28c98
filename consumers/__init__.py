"""Sources that feed SES events into the pipeline.

``simulator`` generates realistic SES traffic for ``ses-tracker demo``.
"""
