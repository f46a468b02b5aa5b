# Workaround for the ROS 2 PyPI wheels (ros-kilted-*): their exported CMake targets carry the
# include paths of the machine the wheels were built on (/opt/python/<tag>/include/python3.X and
# a numpy include under /opt/python/...). Point those at this machine's Python and NumPy. Entries
# that exist here (every regular ROS install) are left alone, so this is a no-op under colcon with
# a system ROS. Target properties are read at generate time, so including this last is enough.
# Included by msg/CMakeLists.txt and interfaces/tf2_msgs/CMakeLists.txt after ament_package().
get_property(_sm_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
foreach(_sm_target IN LISTS _sm_imported)
  get_target_property(_sm_dirs ${_sm_target} INTERFACE_INCLUDE_DIRECTORIES)
  if(NOT _sm_dirs)
    continue()
  endif()
  set(_sm_new "")
  set(_sm_changed FALSE)
  foreach(_sm_dir IN LISTS _sm_dirs)
    if(_sm_dir MATCHES "^/opt/python/" AND NOT EXISTS "${_sm_dir}")
      set(_sm_changed TRUE)
      if(_sm_dir MATCHES "numpy")
        list(APPEND _sm_new ${Python3_NumPy_INCLUDE_DIRS})
      elseif(_sm_dir MATCHES "/include/python3")
        list(APPEND _sm_new ${Python3_INCLUDE_DIRS})
      endif()
    else()
      list(APPEND _sm_new "${_sm_dir}")
    endif()
  endforeach()
  if(_sm_changed)
    list(REMOVE_DUPLICATES _sm_new)
    set_target_properties(${_sm_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_sm_new}")
  endif()
endforeach()
