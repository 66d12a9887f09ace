"""The one place that builds the app for a server (gunicorn wsgi:app).

With RUN_SERVICES (PORTAL_RUN_SERVICES=1, set by `make run`) it also starts the scheduler and
the simulators of the outside systems — in one process only, however many gunicorn workers
import this module: each worker tries a non-blocking lock under the instance directory and
only the one that gets it starts them, holding the lock until it exits. Do not run gunicorn
with --preload: the master would take the lock and its threads would not survive the fork.
"""

from __future__ import annotations

import atexit
import logging
import os

from flask import Flask

from portal import create_app

log = logging.getLogger("wsgi")


def _configure_logging() -> None:
    """INFO lines of the portal, the jobs and the simulators on stderr, beside gunicorn's."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
        )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # the jobs log their own runs


def _link_fss_standin(app, base_url: str) -> None:
    """The ФСС stand-in learns the МО's contracts; the portal gets its certificate (portal/ers/demo.py)."""
    from portal.ers.demo import link_standin

    try:
        with app.app_context():
            link_standin(base_url)
    except Exception:  # an unmigrated database must not stop the portal from serving
        log.warning("Симулятор ФСС: договоры и сертификат не переданы", exc_info=True)


def start_services(app: Flask) -> bool:
    """Start the scheduler and the simulators if enabled and this process wins the lock."""
    config = app.config
    want_scheduler = bool(config.get("SCHEDULER_ENABLED"))
    want_simulators = bool(config.get("SIMULATORS_ENABLED"))
    if not config.get("RUN_SERVICES") or not (want_scheduler or want_simulators):
        return False

    from jobs.scheduler import acquire_services_lock, release_services_lock, start_scheduler

    pid = os.getpid()
    lock = acquire_services_lock(app.instance_path)
    if lock is None:
        log.info(
            "Процесс %s: блокировка служб занята другим процессом, планировщик и симуляторы не запускаю", pid
        )
        return False
    log.info(
        "Процесс %s взял блокировку служб: запускаю %s",
        pid,
        " и ".join(n for n, on in (("планировщик", want_scheduler), ("симуляторы", want_simulators)) if on),
    )

    server = scheduler = standin = None
    if want_simulators:
        from portal.tfoms.files import inbox_dir
        from simulators import start_simulators

        with app.app_context():  # the ТФОМС stand-in can drop its answers into the portal's inbox
            tfoms_inbox = str(inbox_dir())
        try:
            server, base_url = start_simulators(
                config["SIMULATORS_PORT"],
                config={
                    "PORTAL_URL": f"http://127.0.0.1:{config['PORT']}",
                    "TFOMS_EXCHANGE_DIR": tfoms_inbox,
                    "FSS_STATE_FILE": os.path.join(app.instance_path, "simulators", "fss_ers.json"),
                },
            )
            log.info("Процесс %s: симуляторы внешних систем на %s", pid, base_url)
            _link_fss_standin(app, base_url)
        except OSError as error:  # the port is taken: the portal still serves, say why loudly
            log.error(
                "Процесс %s: симуляторы не запущены (порт %s): %s", pid, config["SIMULATORS_PORT"], error
            )
        if server is not None:  # ТФОМС's consumer of the packet queues, its mode set on the host
            from simulators.tfoms_amqp import start_standin

            standin = start_standin(app, server.app)
    if want_scheduler:
        scheduler = start_scheduler(app)
        log.info("Процесс %s: планировщик запущен, заданий: %s", pid, len(scheduler.get_jobs()))

    def _stop() -> None:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        if standin is not None:
            standin.stop()
        if server is not None:
            server.shutdown()
        release_services_lock(lock)
        log.info("Процесс %s: планировщик и симуляторы остановлены", pid)

    atexit.register(_stop)
    app.extensions["services"] = {
        "lock": lock,
        "scheduler": scheduler,
        "simulators": server,
        "tfoms_standin": standin,
    }
    return True


_configure_logging()
app = create_app()
start_services(app)
