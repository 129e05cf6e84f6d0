// Command htpasswd turns "user:password" lines on stdin into bcrypt htpasswd lines for test registries.
// It reuses the bcrypt package distribution's htpasswd auth checks against, so no extra tool is needed.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

func main() {
	scanner := bufio.NewScanner(os.Stdin)
	for scanner.Scan() {
		user, password, ok := strings.Cut(scanner.Text(), ":")
		if !ok || user == "" {
			fmt.Fprintln(os.Stderr, "htpasswd: expected user:password on each line")
			os.Exit(2)
		}
		// MinCost: these are throw-away test passwords and tests create several per session.
		hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			fmt.Fprintln(os.Stderr, "htpasswd:", err)
			os.Exit(1)
		}
		fmt.Printf("%s:%s\n", user, hash)
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "htpasswd:", err)
		os.Exit(1)
	}
}
