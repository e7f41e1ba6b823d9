"""`seethrough batch`: generate every shot of many layouts, resumable and pipelined.

inputs.py and plan.py are pure logic (what to do, where outputs go, what is already done);
shots.py reads layouts from .json files, and from .blend files through the add-on's
blend_shots (Blender); runner.py renders on the main
thread while worker threads keep every server busy; report.py writes contact sheets and the
summary.
"""
