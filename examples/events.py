"""Events between two services: an orders service and a billing service in another process.

Each event stream is a queue named after its topic ("orders", "payments"). The services find
the queues by name alone; the run_id namespaces the names, so two deployments (or two runs of
this script side by side) use queues of the same names without ever seeing each other's events.

    python examples/events.py [--orders 20]
"""

from __future__ import annotations

import argparse
import os
from multiprocessing import get_context

from shared_queue import SharedMemoryQueue

TOPICS = ("orders", "payments")


def billing_service(run_id: str) -> None:
    # Attach by name: nothing but the run_id string crosses the process boundary.
    orders = SharedMemoryQueue("orders", run_id=run_id)
    payments = SharedMemoryQueue("payments", run_id=run_id)
    captured = 0
    while (event := orders.get(timeout=30))["type"] != "shutdown":
        payments.put({"type": "payment_captured", "order": event["order"], "cents": event["cents"]})
        captured += 1
    print(f"billing: captured {captured} payments", flush=True)
    orders.close()
    payments.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Two services exchanging events.")
    parser.add_argument("--orders", type=int, default=20)
    args = parser.parse_args()
    run_id = f"events_{os.getpid()}"  # this run's namespace

    queues = [
        SharedMemoryQueue(topic, create=True, capacity=64, item_size=256, run_id=run_id)
        for topic in TOPICS
    ]
    orders, payments = queues
    billing = get_context("spawn").Process(target=billing_service, args=(run_id,))
    try:
        billing.start()
        total = 0
        for i in range(args.orders):
            cents = 1000 + 25 * i
            orders.put({"type": "order_created", "order": i, "cents": cents})
            total += cents
        orders.put({"type": "shutdown"})
        confirmed = [payments.get(timeout=30) for _ in range(args.orders)]
        billing.join(30)
        assert sorted(e["order"] for e in confirmed) == list(range(args.orders))
        print(
            f"orders: sent {args.orders} orders, {len(confirmed)} payments confirmed, "
            f"{sum(e['cents'] for e in confirmed) / 100:.2f} of {total / 100:.2f} captured"
        )
    finally:
        if billing.is_alive():
            billing.kill()
        for q in queues:
            q.unlink()
            q.close()


if __name__ == "__main__":
    main()
