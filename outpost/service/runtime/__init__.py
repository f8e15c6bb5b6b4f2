"""The service's runtime seams besides the store and the broker: endpoint presence, the
command bus, result fan-out, and the task ledger. Each has one owner module with a small
abstract interface and an embedded (in-process) implementation; ``outpost.service.runtime.rabbit``
has the RabbitMQ/PostgreSQL ones for several replicas."""
