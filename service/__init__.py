"""ses-tracker: live state and latencies for email sent through Amazon SES."""

__version__ = "0.1.0"
