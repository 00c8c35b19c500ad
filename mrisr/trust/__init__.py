"""Checks on a result: data consistency, inputs outside the training range, the guide image."""
