"""Cluster certification: preflight facts, benchmarks through the stack's launcher,
rules from a baseline file, isolation of the bad node or link, and reports.

`kiln.certification.run.certify_stack` is the entry point (`kiln certify`, the
Pulumi Certification resource); `verdict` holds the result model every other
module reads.
"""
