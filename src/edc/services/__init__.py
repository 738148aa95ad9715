"""The domain: submissions, accounts, rules, the leaderboard, moderation, finals. No HTTP, no RQ."""
