"""Deep training templates (torch loops over pixels): see ``context`` for the contract."""
