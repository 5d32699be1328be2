"""Units of work run on workers: discover, plan, read, decode, score, write, summarise.

Plain functions with no Prefect imports, so they are tested directly; ``iqaflow.flows``
wraps them as Prefect tasks with names, retries and states.
"""
