"""The model and its contract: the folder and its rt_info (metadata, model_info), compiling (models, attention, cpu,
compile_choice), the estimator and detector, the heatmap codec and the crop geometry. openvino, numpy, opencv only."""
