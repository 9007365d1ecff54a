"""What a person looks at: live terminal view and run reports with plots."""
