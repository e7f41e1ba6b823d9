"""`seethrough dataset`: the synthetic occlusion dataset's orchestration (make) and statistics (stats)."""
