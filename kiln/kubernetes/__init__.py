"""A stack's Kubernetes side as plain dicts: objects, Helm values, Kueue, the certification Job.

`components` turns exactly these dicts into resources, and the tests validate
the same dicts against the Kubernetes schemas: what is checked is what is
deployed. Nothing here imports Pulumi.

| module | holds |
| --- | --- |
| `versions` | every chart version and image pinned |
| `pools` | which pools need the GPU and Network Operators |
| `objects` | namespaces, the NicClusterPolicy, the datasets volume, the DCGM dashboard |
| `helm_values` | the values of each chart |
| `kueue` | the queue and its quota |
| `certification_job` | the certification Service and Job |
"""
