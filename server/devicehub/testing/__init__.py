"""Test and benchmark support shipped with the package: a throwaway PostgreSQL cluster
and a stack launcher."""
