"""Runnable replicated classes, installed with Cohort: `cohort serve cohort.samples.counter:Counter`
(counter, kvstore, bank, locks)."""
