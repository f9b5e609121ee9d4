"""The comparison bench (`pgl compare`): random vs BYOL vs PGL with paired seeds, its statistics and report."""
