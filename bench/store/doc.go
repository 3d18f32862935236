// Package store benchmarks sqlstore's write, claim and inbox paths against
// hand-written SQL on the same tables in the same run: a business
// transaction that saves one message against a hand-written INSERT (with
// and without pg_notify), SaveMany against COPY (PostgreSQL) and a
// multi-row INSERT (SQLite), the lease and locked claims against a
// hand-written FOR UPDATE SKIP LOCKED loop, and the inbox save against a
// hand-written INSERT ... ON CONFLICT DO NOTHING. Each benchmark reports
// the library's cost as a ratio to its baseline. The PostgreSQL half needs
// TXM_POSTGRES_URL and skips without it.
//
// The checks (TestStore*Paths) assert that every baseline writes the same
// rows as the library's path, so the ratios compare like with like. See
// bench/README.md for the commands and the current figures.
package store
