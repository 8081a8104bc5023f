"""DistributeAI node package."""
