// Command nosqlite is a program that uses the PostgreSQL and MySQL stores
// only: TestBuildWithoutSQLite builds it and checks that it does not link
// SQLite.
package main

import (
	"fmt"

	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/mysql"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
)

func main() {
	_, errPG := postgres.New(nil, sqlstore.Config{})
	_, errMySQL := mysql.New(nil, sqlstore.Config{})
	fmt.Println(errPG, errMySQL)
}
