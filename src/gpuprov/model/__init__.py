"""What the user wrote: inventory, host patterns, variables, playbooks, YAML
with line numbers, and edits of the inventory that keep its comments."""
