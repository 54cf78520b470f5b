"""`mmseg replay BAG`: a recorded drive (rosbag2, mcap or sqlite3) through the node's synchronizer and engine,
scored against the bag's ground truth. No ROS install is needed for the offline mode.

    bagio.py    read a bag in log-time order (clear errors for missing, truncated, foreign bags); write the output bag
    offline.py  the node's data path driven by bag time: decode + checks, synchronizer, engine, outputs
    scoring.py  confusion matrices per modality subset, condition and drop-out window; latency per stage
    report.py   the JSON document and its Markdown
    cli.py      the command
"""
