"""The `stockq` command: submit and follow jobs, `stockq up` (the whole stack on one machine), the demo."""
