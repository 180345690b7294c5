"""Quick start: three worker processes drain a task queue that they open by name."""

import os
import time
from multiprocessing import Process

from shared_queue import Empty, SharedMemoryQueue


def worker(queue_name: str, run_id: str, worker_id: int) -> None:
    # Attach to the queue the main process created, by its name and run_id
    tasks = SharedMemoryQueue(name=queue_name, create=False, run_id=run_id)
    try:
        while True:
            try:
                task = tasks.get(timeout=1.0)
            except Empty:  # nothing arrived within the timeout: wait again
                continue
            if task == "STOP":
                break
            print(f"Worker {worker_id} processing: {task}")
            time.sleep(0.1)  # simulate work
    finally:
        tasks.close()  # releases this handle; the queue lives on


def main() -> None:
    run_id = f"quickstart_{os.getpid()}"  # this run's namespace: two runs never collide
    tasks = SharedMemoryQueue(
        name="tasks", create=True, capacity=1000, item_size=4096, run_id=run_id
    )
    try:
        workers = [Process(target=worker, args=("tasks", run_id, i)) for i in range(3)]
        for p in workers:
            p.start()
        for i in range(20):
            tasks.put(f"task_{i}")
        for _ in workers:  # one STOP per worker: each get takes one item
            tasks.put("STOP")
        for p in workers:
            p.join()
        print(f"Final queue size: {tasks.qsize()}")
    finally:
        tasks.unlink()  # removes the queue from the system, once
        tasks.close()  # releases this handle


if __name__ == "__main__":
    main()
