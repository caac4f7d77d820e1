"""Optuna's TPE as a JSON-lines peer for bench/sampler (run with Debian's /usr/bin/python3).

Modes: "multivariate" (TPESampler(multivariate=True)), "default" (TPESampler()), "asktime"
(time one ask at given history sizes). With "running": R, R trials are always in flight (the
oldest is told when the next is asked) and the sampler has constant_liar=True. Reads the request
on stdin, prints each proposal as a JSON line; the driver answers each with its value, in order.
"""
import collections
import json
import sys
import time

import warnings

import optuna

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

optuna.logging.set_verbosity(optuna.logging.ERROR)


def distributions(space):
    return {f"x{i}": optuna.distributions.FloatDistribution(lo, hi) for i, (lo, hi) in enumerate(space)}


def sampler(mode, seed, constant_liar=False):
    return optuna.samplers.TPESampler(seed=seed, multivariate=(mode == "multivariate"), constant_liar=constant_liar)


def run(req):
    dists = distributions(req["space"])
    running = req.get("running", 1)
    study = optuna.create_study(sampler=sampler(req["mode"], req["seed"], constant_liar=running > 1))
    pending = collections.deque()
    for _ in range(req["trials"]):
        trial = study.ask(dists)
        print(json.dumps([trial.params[f"x{i}"] for i in range(len(dists))]), flush=True)
        pending.append(trial)
        if len(pending) >= running:
            # values arrive in proposal order, so the oldest pending trial's is next on stdin
            study.tell(pending.popleft(), float(sys.stdin.readline()))
    while pending:  # read every value the driver sends before exiting
        study.tell(pending.popleft(), float(sys.stdin.readline()))


def asktime(req):
    dists = distributions(req["space"])
    out = {}
    for n, history in req["histories"].items():
        study = optuna.create_study(sampler=sampler("multivariate", 0))
        study.add_trials(
            [optuna.trial.create_trial(params={f"x{i}": v for i, v in enumerate(p)}, distributions=dists, value=val) for p, val in history]
        )
        times = []
        for _ in range(req["repeat"]):
            t0 = time.perf_counter()
            trial = study.ask(dists)
            times.append(time.perf_counter() - t0)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        times.sort()
        out[n] = times[len(times) // 2] * 1000
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    req = json.loads(sys.stdin.readline())
    (asktime if req["mode"] == "asktime" else run)(req)
