"""A Beam SDK worker pool on 127.0.0.1 (`python tests/beam_worker_pool.py PORT`): the external environment of a
portable runner, as a Flink or Spark deployment runs beside its task managers. Every job's SDK harness is a
separate `python` process (the first on PATH) that this pool starts and, on SIGTERM, stops."""
import signal
import sys
import time

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer, kill_process_gracefully
from apache_beam.utils import thread_pool_executor


def serve(port: int) -> None:
    pool = BeamFnExternalWorkerPoolServicer(use_process=True)
    server = grpc.server(thread_pool_executor.shared_unbounded_instance())
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()

    def stop(*_):
        for worker in list(pool._worker_processes.values()):
            kill_process_gracefully(worker)
        server.stop(0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
