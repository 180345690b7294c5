"""The original quick start: a pool of worker processes draining a task queue by name."""

import time
from multiprocessing import Process

from shared_queue import SharedMemoryQueue


def worker(queue_name: str, run_id: str, worker_id: int) -> None:
    # Connect to existing queue by name
    queue = SharedMemoryQueue(name=queue_name, create=False, run_id=run_id)
    while True:
        try:
            task = queue.get(timeout=1.0)
            if task == "STOP":
                break
            print(f"Worker {worker_id} processing: {task}")
            time.sleep(0.1)  # Simulate work
        except queue.Empty:
            continue
    queue.close()


def main() -> None:
    run_id = "task_processor"
    # Create the queue in main process
    work_queue = SharedMemoryQueue(
        name="tasks", create=True, capacity=1000, item_size=4096, run_id=run_id
    )
    try:
        # Start worker processes
        workers = []
        for i in range(3):
            p = Process(target=worker, args=("tasks", run_id, i))
            p.start()
            workers.append(p)

        # Add tasks to queue
        for i in range(20):
            work_queue.put(f"task_{i}")

        # Signal workers to stop
        for _ in workers:
            work_queue.put("STOP")

        # Wait for workers to finish
        for p in workers:
            p.join()

        print(f"Final queue size: {work_queue.qsize()}")
    finally:
        # Cleanup
        work_queue.unlink()
        work_queue.close()


if __name__ == "__main__":
    main()
