"""The dependencies dashboard: PostgreSQL and Redis next to the service's use of them.

PostgreSQL's series come from the Prometheus community's postgres_exporter (scrape job
``postgres``: compose, or any server you run) or, in Kubernetes, from CloudNativePG's
built-in exporter (job ``user-service-db``, set by k8s/overlays/prod/postgres-podmonitor.yaml);
Redis's from redis_exporter (job ``redis``). The service's own pool series sit beside them,
so "the pool waits" and "the database is busy" are read on one screen. The names are those
of the exporters' releases the tests run (Debian's 0.11 and 1.45) and of CloudNativePG's
predefined metrics; ``EXPORTER_SERIES`` lists every one this dashboard reads.
"""

from __future__ import annotations

from deploy.grafana.model import Dashboard, Panel, Row, Target, Threshold, or_zero, sel

POSTGRES = 'job="postgres"'
CNPG = 'job="user-service-db"'
REDIS = 'job="redis"'
RATE = "[$__rate_interval]"
# Checkouts answered within 50 ms: from a warm pool, or opening a connection.
FAST_CHECKOUT = sel('le="0.05"')

EXPORTER_SERIES = frozenset(
    {
        "pg_up",
        "pg_stat_activity_count",
        "pg_settings_max_connections",
        "pg_stat_database_xact_commit",
        "pg_stat_database_xact_rollback",
        "pg_stat_database_deadlocks",
        "pg_locks_count",
        "pg_stat_activity_max_tx_duration",
        "pg_database_size_bytes",
        "cnpg_collector_up",
        "cnpg_backends_total",
        "cnpg_backends_max_tx_duration_seconds",
        "cnpg_backends_waiting_total",
        "cnpg_pg_stat_database_xact_commit",
        "cnpg_pg_stat_database_xact_rollback",
        "cnpg_pg_stat_database_deadlocks",
        "cnpg_pg_replication_lag",
        "cnpg_pg_replication_in_recovery",
        "cnpg_pg_settings_setting",
        "redis_up",
        "redis_memory_used_bytes",
        "redis_memory_max_bytes",
        "redis_commands_processed_total",
        "redis_evicted_keys_total",
        "redis_expired_keys_total",
        "redis_connected_clients",
        "redis_rejected_connections_total",
        "redis_keyspace_hits_total",
        "redis_keyspace_misses_total",
    }
)


def postgres_row() -> Row:
    return Row(
        "PostgreSQL",
        (
            Panel(
                title="Connections: the database's limit, its backends, the service's pool",
                description=(
                    "Backends by state (postgres_exporter) against max_connections, and the service's pool: "
                    "connections in use and its maximum per instance. Every replica's pool maximum, summed over "
                    "replicas plus the other clients, must stay below max_connections."
                ),
                targets=(
                    Target(f"sum by (state) (pg_stat_activity_count{{{POSTGRES}}})", "backends {{state}}"),
                    Target(f"max(pg_settings_max_connections{{{POSTGRES}}})", "max_connections"),
                    Target(f"sum(user_service_db_pool_connections_in_use{sel()})", "service pool in use"),
                    Target(f"sum(user_service_db_pool_connections_max{sel()})", "service pool maximum"),
                ),
            ),
            Panel(
                title="Pool connection wait (service)",
                description=(
                    "The service's checkouts waiting over 50 ms for a database connection, per second and "
                    "instance, and those that gave up. Waiting while the database has few active backends "
                    "points at the pool's size; waiting while it is busy, at the database."
                ),
                targets=(
                    Target(
                        f"sum by (instance) (rate(db_client_connection_wait_time_seconds_count{sel()}{RATE}))\n"
                        "- sum by (instance) "
                        f"(rate(db_client_connection_wait_time_seconds_bucket{FAST_CHECKOUT}{RATE}))",
                        "{{instance}} waited > 50 ms",
                    ),
                    Target(
                        or_zero(f"sum by (instance) (rate(db_client_connection_timeouts_total{sel()}{RATE}))"),
                        "{{instance}} gave up",
                    ),
                ),
            ),
            Panel(
                title="Transactions per second",
                description="Commits and rollbacks per second, every database of the server.",
                targets=(
                    Target(f"sum(rate(pg_stat_database_xact_commit{{{POSTGRES}}}{RATE}))", "commits"),
                    Target(f"sum(rate(pg_stat_database_xact_rollback{{{POSTGRES}}}{RATE}))", "rollbacks"),
                    Target(or_zero(f"sum(rate(pg_stat_database_deadlocks{{{POSTGRES}}}{RATE}))"), "deadlocks"),
                ),
                unit="ops",
            ),
            Panel(
                title="Locks held, by mode",
                description=(
                    "Locks by mode on the server. Row locks of the login path (the locked re-read) show as "
                    "RowShareLock/RowExclusiveLock; ExclusiveLock and AccessExclusiveLock during a migration."
                ),
                targets=(Target(f"sum by (mode) (pg_locks_count{{{POSTGRES}}})", "{{mode}}"),),
            ),
            Panel(
                title="Longest open transaction, by state",
                description=(
                    "Age of the oldest transaction in each backend state. An 'idle in transaction' age that "
                    "grows is a client holding locks and blocking vacuum; the service's statement timeout "
                    "bounds its own."
                ),
                targets=(Target(f"max by (state) (pg_stat_activity_max_tx_duration{{{POSTGRES}}})", "{{state}}"),),
                unit="s",
                thresholds=(Threshold(None, "green"), Threshold(60, "red")),
            ),
            Panel(
                title="Database size",
                description="On-disk size of each database.",
                targets=(Target(f"sum by (datname) (pg_database_size_bytes{{{POSTGRES}}})", "{{datname}}"),),
                unit="bytes",
            ),
            Panel(
                title="Exporters up",
                description=(
                    "1 while the exporter reaches its server (pg_up, redis_up); 0 means the panels above are blind."
                ),
                targets=(
                    Target(f"min(pg_up{{{POSTGRES}}})", "PostgreSQL"),
                    Target(f"min(redis_up{{{REDIS}}})", "Redis"),
                ),
                width=24,
                height=5,
                maximum=1,
            ),
        ),
    )


def cloudnativepg_row() -> Row:
    """The same questions as the PostgreSQL row, asked of CloudNativePG's exporter (one
    target per instance, ``pod`` labelled), plus what only a replicated cluster has: the
    standbys' lag. Empty outside Kubernetes, as the PostgreSQL row is empty inside it."""
    return Row(
        "PostgreSQL on CloudNativePG (Kubernetes)",
        (
            Panel(
                title="Connections per instance against max_connections",
                description=(
                    "Client backends on each instance of the cluster (cnpg_backends_total) and the instances' "
                    "max_connections. The primary carries the service's pools; every replica's pool maximum, "
                    "summed, plus the surge of a rollout, must stay below it."
                ),
                targets=(
                    Target(f"sum by (pod) (cnpg_backends_total{{{CNPG}}})", "backends {{pod}}"),
                    Target(
                        f'max(cnpg_pg_settings_setting{{{CNPG},name="max_connections"}})',
                        "max_connections",
                    ),
                    Target(f"sum(user_service_db_pool_connections_max{sel()})", "service pools' maximum"),
                ),
            ),
            Panel(
                title="Transactions per second (primary and standbys)",
                description="Commits, rollbacks and deadlocks per second, every database, every instance.",
                targets=(
                    Target(f"sum(rate(cnpg_pg_stat_database_xact_commit{{{CNPG}}}{RATE}))", "commits"),
                    Target(f"sum(rate(cnpg_pg_stat_database_xact_rollback{{{CNPG}}}{RATE}))", "rollbacks"),
                    Target(or_zero(f"sum(rate(cnpg_pg_stat_database_deadlocks{{{CNPG}}}{RATE}))"), "deadlocks"),
                ),
                unit="ops",
            ),
            Panel(
                title="Standby replication lag",
                description=(
                    "Seconds each standby's replay is behind the primary (0 on the primary, and on a standby "
                    "that replayed all it received). Lag means a failover would lose or wait for that much."
                ),
                targets=(Target(f"max by (pod) (cnpg_pg_replication_lag{{{CNPG}}})", "{{pod}}"),),
                unit="s",
                thresholds=(Threshold(None, "green"), Threshold(30, "red")),
            ),
            Panel(
                title="Longest open transaction, and backends waiting for a lock",
                description=(
                    "The oldest open transaction on any instance (an 'idle in transaction' one holds locks and "
                    "blocks vacuum), and backends waiting for a lock."
                ),
                targets=(
                    Target(
                        f"max by (state) (cnpg_backends_max_tx_duration_seconds{{{CNPG}}})",
                        "oldest transaction, {{state}} (s)",
                    ),
                    Target(f"sum(cnpg_backends_waiting_total{{{CNPG}}})", "waiting for a lock"),
                ),
                thresholds=(Threshold(None, "green"), Threshold(60, "red")),
            ),
            Panel(
                title="Instances exporting",
                description=(
                    "Instances whose exporter reaches PostgreSQL (cnpg_collector_up), and how many of them are "
                    "standbys. Fewer than the Cluster's instances: the panels above miss one."
                ),
                targets=(
                    Target(f"sum(cnpg_collector_up{{{CNPG}}})", "exporting"),
                    Target(f"sum(cnpg_pg_replication_in_recovery{{{CNPG}}})", "standbys"),
                ),
                width=24,
                height=5,
            ),
        ),
    )


def redis_row() -> Row:
    return Row(
        "Redis (rate limits and the login throttle)",
        (
            Panel(
                title="Memory used and its limit",
                description=(
                    "Used memory against maxmemory (0: no limit). The rate-limit counters and the throttle's "
                    "keys expire by themselves; memory near the limit means evictions, which forget counts."
                ),
                targets=(
                    Target(f"sum(redis_memory_used_bytes{{{REDIS}}})", "used"),
                    Target(f"sum(redis_memory_max_bytes{{{REDIS}}})", "maxmemory"),
                ),
                unit="bytes",
                width=8,
            ),
            Panel(
                title="Commands per second",
                description="Commands Redis processed per second: about two per rate-limited request.",
                targets=(Target(f"sum(rate(redis_commands_processed_total{{{REDIS}}}{RATE}))", "commands"),),
                unit="ops",
                width=8,
            ),
            Panel(
                title="Evicted and expired keys",
                description=(
                    "Keys evicted (maxmemory reached: counts are lost, limits loosen) and keys expired "
                    "(normal: every window of a limit ends)."
                ),
                targets=(
                    Target(or_zero(f"sum(rate(redis_evicted_keys_total{{{REDIS}}}{RATE}))"), "evicted"),
                    Target(or_zero(f"sum(rate(redis_expired_keys_total{{{REDIS}}}{RATE}))"), "expired"),
                ),
                unit="ops",
                width=8,
                thresholds=(Threshold(None, "green"), Threshold(0.001, "red")),
            ),
            Panel(
                title="Clients",
                description="Connected clients, and connections refused (maxclients reached).",
                targets=(
                    Target(f"sum(redis_connected_clients{{{REDIS}}})", "connected"),
                    Target(or_zero(f"sum(rate(redis_rejected_connections_total{{{REDIS}}}{RATE}))"), "refused/s"),
                ),
            ),
            Panel(
                title="Keyspace hit ratio",
                description=(
                    "Lookups that found their key. Limits and the throttle mostly write, so a low ratio is normal."
                ),
                targets=(
                    Target(
                        f"sum(rate(redis_keyspace_hits_total{{{REDIS}}}{RATE}))\n/\n"
                        f"(sum(rate(redis_keyspace_hits_total{{{REDIS}}}{RATE})) + "
                        f"sum(rate(redis_keyspace_misses_total{{{REDIS}}}{RATE})))",
                        "hits",
                    ),
                ),
                unit="percentunit",
                maximum=1,
            ),
        ),
    )


def dependencies() -> Dashboard:
    return Dashboard(
        uid="user-service-dependencies",
        title="User service / Dependencies",
        description=(
            "PostgreSQL (postgres_exporter, job postgres; CloudNativePG's exporter, job user-service-db) and "
            "Redis (redis_exporter, job redis) next to the service's own database pool."
        ),
        filename="dependencies.json",
        rows=(postgres_row(), cloudnativepg_row(), redis_row()),
    )
