"""A live dashboard per cluster: a process beside the controller, started on first use.

`link` (client API layer) finds or starts it; the rest (surfaces layer) is the process:
`server` (Bokeh and the JSON API), `page` (the document), `feed` (the watch on the
controller), `status` (what it knows), `command` (``ipcluster dashboard``), and for Jupyter
`jupyter` (the jupyter-server-proxy entry) and `manager` (the cluster manager page). Nothing
here is imported by a cluster that nobody looks at.
"""
