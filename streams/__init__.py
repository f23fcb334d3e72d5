"""The Faust app and its agents: feedback join, River drift statistics, labelled windows,
train triggers and alerting. It never imports PyTorch (see DESIGN.md, "Rooms")."""
