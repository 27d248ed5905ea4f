"""The Pyro5 side of Cohort: the replicas' protocol server, the client connection, the failover
proxy, group references and naming, and the errors a client meets (docs/architecture.md)."""
